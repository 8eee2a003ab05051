"""JSON Schemas of vmxprobe's outputs, shipped as package data."""
