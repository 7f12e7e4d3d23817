"""Qt widgets. Each view gets its models in its constructor and reports user actions as
signals; none of them reaches the engine or a target."""
