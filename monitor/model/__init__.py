"""The CLAP boundary: runners, backends, features, caches; no torch at package import."""
