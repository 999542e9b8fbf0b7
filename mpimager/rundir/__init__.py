"""The run directory: the journal and what a re-run may skip (`journal`), every job's state read back (`status`)."""
