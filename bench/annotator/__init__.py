"""The simulated annotator (bench and tests only, not installed): ground truth plays the
annotator (`oracle`), a scripted headless browser carries the edits out in Label Studio
(`browser`), `session` runs whole annotation sessions, `simulate` writes point annotations
straight through the API."""
