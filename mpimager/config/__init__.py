"""The configuration: layered TOML, validated all at once, into frozen option values (`load`); every
section declares its keys in one validator vocabulary (`validate`)."""
