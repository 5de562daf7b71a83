//! The gateway service of Kizuna.
