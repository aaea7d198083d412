"""Running workflows across processes: the client that submits and the workers that execute."""
