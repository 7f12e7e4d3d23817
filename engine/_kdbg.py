import os, time
_f = open(f"/tmp/kdbg/{os.getpid()}.log", "a", buffering=1) if os.environ.get("KDBG") else None
def log(*a):
    if _f: _f.write(" ".join(str(x) for x in a) + "\n")
