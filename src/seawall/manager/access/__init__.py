"""Users, roles and API tokens of the site manager, and who may call which endpoint."""
