"""DataModules, datasets, degradations and the embedded sample data every experiment can run on."""
