"""The task interface: the Problem protocol, reward sources, answer conventions, prompt encoding and
per-group metrics. DataModules and users build on this layer only."""
