"""The GraphQL layer: a thin strawberry schema over the domain and the reads."""
