"""The `tfrobust` command line."""
