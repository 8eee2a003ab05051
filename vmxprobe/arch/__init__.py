"""What the Intel SDM and AMD's APM define: register indexes, fields, control tables and
decoders. Data and pure functions; nothing here reads a host or models the kernel."""
