"""The shared store suite (tests/store_contract.py) over file://, and over
dropbox:// and gdrive:// against local stand-ins for their APIs."""

import pytest
from dropbox_server import TOKEN, DropboxServer, session_for
from gdrive_server import DriveServer
from store_contract import StoreContract

from mlstorlets.client.stores.dropbox import DropboxStore, make_client
from mlstorlets.client.stores.gdrive import GDriveStore
from mlstorlets.client.stores.gdrive import make_client as make_drive_client
from mlstorlets.client.stores.local import FileStore


class TestFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return FileStore(str(tmp_path))


class TestDropboxStore(StoreContract):
    @pytest.fixture
    def store(self):
        with DropboxServer(page_size=2) as server:
            client = make_client({"DROPBOX_ACCESS_TOKEN": TOKEN}, session=session_for(server))
            yield DropboxStore(client)


class TestGDriveStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        with DriveServer(str(tmp_path), page_size=2) as server:
            environ = {
                "GDRIVE_CREDENTIALS": server.authorized_user_file(),
                "GDRIVE_API_ENDPOINT": server.api_endpoint,
            }
            yield GDriveStore(make_drive_client(environ, ca_certs=server.ca_certs))
