"""Hardware abstraction: interfaces (portable) and board drivers."""
