// An empty script: what a preload costs before the application does anything.
