hh
