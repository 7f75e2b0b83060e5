"""The Dagster layer: thin glue from assets, checks and sensors to the domain packages."""
