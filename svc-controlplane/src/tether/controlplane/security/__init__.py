"""Who may do what: API tokens and roles (``auth``), write-only location env values
(``masking``), and the key that signs work items (``workkeys``)."""
