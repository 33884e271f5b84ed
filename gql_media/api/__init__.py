"""The GraphQL api: Strawberry on Starlette. The only layer that imports strawberry."""
