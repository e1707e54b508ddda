"""The protected side: capture of volume writes into a group stream, sync, shipping."""
