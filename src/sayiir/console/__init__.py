"""The operator console's shared layer: actions on runs (``sayiir.console.actions``) used by
both the ``sayiir runs`` CLI and the web console, so each action has one implementation."""
