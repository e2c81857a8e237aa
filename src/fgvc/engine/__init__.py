"""The workflow on a trained or training model, independent of which model it is: open a run (``run``), fit it
(``trainer``, ``optim``, ``checkpoint``, ``runlock``, ``tracking``, ``distributed``), evaluate, calibrate, predict
and combine runs (``evaluate``, ``calibration``, ``predict``, ``ensemble``)."""
