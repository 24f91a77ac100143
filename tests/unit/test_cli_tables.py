"""How the command line shows what it lists."""


def test_storlets_lists_many_parameters_briefly():
    from mlstorlets.client.cli.commands import brief

    assert brief([]) == "-"
    assert brief(["size", "margin"]) == "size,margin"
    many = ["parameter%d" % i for i in range(19)]
    text = brief(many)
    assert len(text) <= 50 and text.endswith(",... (19)")
    assert text.startswith("parameter0,parameter1,")
    # A first name longer than the width is shown whole, never an empty cut.
    assert brief(["x" * 45]) == "x" * 45
    assert brief(["x" * 45, "b"]) == "x" * 45 + ",... (2)"
