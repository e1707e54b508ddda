"""What two Seawall processes say to each other, defined once for both sides."""
