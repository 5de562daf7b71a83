//! The deals service of Kizuna.
