"""A competition's submission file: its format, validation and scoring (``submission``, shared by ``fgvc predict``,
``fgvc score`` and the scoring server), and the upload client behind ``fgvc submit`` (``client``)."""
