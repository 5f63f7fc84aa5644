"""Small datasets bundled with gdopt (read through :mod:`gdopt.data`)."""
