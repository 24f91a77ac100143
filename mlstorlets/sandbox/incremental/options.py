"""How to read one training object: its format, its columns, and the
bounds of every decoder (:data:`LIMITS`), from the storlet's parameters,
then the object's metadata, then defaults."""

from mlstorlets.sandbox.errors import ObjectError

FORMATS = ("auto", "csv", "tsv", "whitespace", "npy", "npz")


DELIMITERS = {"csv": ",", "tsv": "\t", "whitespace": None}


DEFAULT_BATCH_SIZE = 65536


#: limit -> (default, hard maximum).  Sized so that one decoding stays well
#: below a sandbox's memory: a batch is held about three times (text or
#: raw, float64 values, the split X), an archive once plus its arrays.
LIMITS = {
    "max_rows": (100_000_000, 10_000_000_000),
    "max_line_bytes": (1 << 20, 16 << 20),
    "max_features": (100_000, 10_000_000),
    "max_batch_bytes": (256 << 20, 2 << 30),
    "max_archive_bytes": (512 << 20, 4 << 30),
    "max_array_bytes": (512 << 20, 4 << 30),
    "max_members": (16, 1024),
}


def _label_column(text):
    """An int, or None for ``none`` (the object holds no labels)."""
    return None if str(text).lower() == "none" else int(text)


#: option name -> (metadata key, parser); parameters use the option name.
OPTIONS = {
    "format": ("Data-Format", str),
    "num_features": ("Num-Features", int),
    "label_column": ("Label-Column", _label_column),
    "weight_column": ("Weight-Column", int),
    "header_rows": ("Header-Rows", int),
    "batch_size": (None, int),
    **{limit: (None, int) for limit in LIMITS},
}


class DataOptions:
    """How to read one object.

    Parameters
    ----------
    format : {'auto', 'csv', 'tsv', 'whitespace', 'npy', 'npz'}, default='auto'
        'auto' recognises ``.npy``/``.npz`` by their magic bytes and tells the
        text delimiters apart from the first data line (comma, then tab, else
        whitespace).
    num_features : int, default=None
        Expected number of features; None infers it from the first row.
    label_column : int or None, default=-1
        Column of the label (negative counts from the end); None: no label
        (``Batch.y`` is None).
    weight_column : int, default=None
        Column of a per-row sample weight, if any.
    header_rows : int, default=0
        Leading text lines to skip.
    batch_size : int, default=65536
        Rows per mini-batch.
    **limits : int
        Any of :data:`LIMITS`, each in [1, its hard maximum].
    """

    def __init__(
        self,
        format="auto",
        num_features=None,
        label_column=-1,
        weight_column=None,
        header_rows=0,
        batch_size=DEFAULT_BATCH_SIZE,
        **limits,
    ):
        self.format = format
        self.num_features = num_features
        self.label_column = label_column
        self.weight_column = weight_column
        self.header_rows = header_rows
        self.batch_size = batch_size
        unknown = set(limits) - set(LIMITS)
        if unknown:
            raise TypeError(f"unknown limits {sorted(unknown)}")
        for limit, (default, _) in LIMITS.items():
            setattr(self, limit, limits.get(limit, default))

    @classmethod
    def from_sources(cls, params, metadata, name=""):
        """Options from storlet parameters, else object metadata, else defaults."""
        metadata = {str(k).lower(): v for k, v in (metadata or {}).items()}
        kwargs = {}
        for option, (meta_key, parse) in OPTIONS.items():
            raw = params.get(option)
            if raw is None and meta_key is not None:
                raw = metadata.get(meta_key.lower())
            if raw is None or raw == "":
                continue
            try:
                kwargs[option] = parse(raw)
            except ValueError:
                raise ObjectError(name, f"bad {option} {raw!r}") from None
        options = cls(**kwargs)
        options.check(name)
        return options

    def check(self, name=""):
        if self.format not in FORMATS:
            raise ObjectError(name, f"unknown format {self.format!r}, expected one of {FORMATS}")
        if self.num_features is not None and self.num_features < 1:
            raise ObjectError(name, "num_features must be >= 1")
        if self.header_rows < 0:
            raise ObjectError(name, "header_rows must be >= 0")
        if self.batch_size < 1:
            raise ObjectError(name, "batch_size must be >= 1")
        if self.weight_column is not None and self.weight_column == self.label_column:
            raise ObjectError(name, "weight_column and label_column are the same")
        for limit, (_, hard) in LIMITS.items():
            value = getattr(self, limit)
            if not 1 <= value <= hard:
                raise ObjectError(name, f"{limit} must be in [1, {hard}], got {value}")
        if self.num_features is not None and self.num_features > self.max_features:
            raise ObjectError(
                name, f"num_features {self.num_features} is over max_features={self.max_features}"
            )


def extra_columns(options):
    """Columns that are not features: the label's and the weight's."""
    return (options.label_column is not None) + (options.weight_column is not None)


def expected_columns(options):
    if options.num_features is None:
        return None
    return options.num_features + extra_columns(options)


def refusal(name, what, limit, options, hint=""):
    return ObjectError(name, f"{what} is over {limit}={getattr(options, limit)}{hint}")
