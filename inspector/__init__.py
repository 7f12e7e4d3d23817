"""The Kintsugi inspector: PySide6 on a qasync loop, thin Qt models over engine objects."""
