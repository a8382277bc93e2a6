"""The pipeline service: projects, pipelines with immutable revisions, generation from a
repository snapshot, export to GitHub Actions and GitLab CI."""
