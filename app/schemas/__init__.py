"""Request and response models: `…Public` is what the API shows, never the ORM rows."""
