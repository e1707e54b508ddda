"""The recovery side: receiving a group's frames into its journal, aging, hash answers."""
