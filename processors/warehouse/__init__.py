"""The warehouse: its schema as plain data (``schema``), the SQLAlchemy tables built from it
(``tables``) and the writer. Importing the package imports none of them."""
