"""Pure model of sayiir: no I/O, standard library only."""
