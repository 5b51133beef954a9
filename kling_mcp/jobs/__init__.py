"""Jobs: the record and state machine (model), persistence (store), the background runner."""
