"""The Train step's widgets: the runs table, the run dashboard, the loss chart, the dialogs."""
