"""The run directory: every path in it (`layout`), the journal and what a re-run may skip (`journal`), every
job's state read back (`status`)."""
