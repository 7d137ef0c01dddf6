// Intentionally empty: every helper in CHVCoreShims.h is static inline.
