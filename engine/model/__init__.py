"""Pure data and rules: headers, transactions, session logs, known states (DESIGN §4)."""
