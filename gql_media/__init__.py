"""gql_media: a GraphQL service that turns requests into media."""

__version__ = "0.1.0"
