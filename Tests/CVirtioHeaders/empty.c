// Intentionally empty: CVirtioHeaders.h is constants only.
