"""What people look at: PIL drawing (``draw``), matplotlib plots (``plots``), explanation pictures of a model's
attention (``explain``) and the HTML run report (``report``). They ask a Run and its model spec; the engine never
imports them."""
