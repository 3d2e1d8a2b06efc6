import httpx


def test_push_then_pull_round_trips(http: httpx.Client, collection: str) -> None:
    doc = {"id": "a", "title": "x", "_deleted": False}
    assert http.post(f"/api/v1/sync/{collection}", json=[{"newDocumentState": doc}]).json() == []
    page = http.get(f"/api/v1/sync/{collection}").json()
    assert page["documents"] == [doc]
