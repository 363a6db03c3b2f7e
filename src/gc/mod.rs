//! Node-level garbage collection, as the kubelet's: dead containers, sandboxes and log folders
//! of pods that are gone (`containers`), and unused images when the image file system fills
//! (`images`). Each decides in plain functions and acts through the CRI client.

pub mod containers;
pub mod images;
