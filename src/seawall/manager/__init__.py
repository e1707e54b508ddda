"""The site manager: REST API, database, pairing, and orchestration of the site's agent."""
