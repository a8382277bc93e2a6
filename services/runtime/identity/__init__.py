"""Who is calling: API keys, tokens, mesh identities, roles. Shared by every service.

One service issues keys and tokens (whichever serves ApiKeyService and TokenService); every
service verifies them here, locally, with what Vault and Redis hold.
"""
