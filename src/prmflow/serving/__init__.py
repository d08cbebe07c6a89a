"""The served model: the scorer behind the pyfunc, the registry and its gate, the `register` stage."""
