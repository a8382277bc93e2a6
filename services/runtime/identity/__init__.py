"""Who is calling: API keys, tokens, mesh identities, roles. Shared by every service.

The config service issues keys and tokens (ApiKeyService, TokenService); every service
verifies them here, locally, with what Vault and Redis hold.
"""
