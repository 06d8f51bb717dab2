"""The Config step's widgets: the form (one row a schema field) and the side panel."""
