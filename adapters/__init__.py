"""Provider adapters: one module per wire format.  Users reach them through `broker`, never directly."""
