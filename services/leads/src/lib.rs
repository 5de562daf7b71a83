//! The leads service of Kizuna.
