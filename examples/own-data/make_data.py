"""Regenerate the small synthetic listening log of this folder (deterministic, seed 14).

60 listeners, 48 tracks in 4 genres; each listener mostly plays one genre, 8-16 plays, dated.
The data is made up (no real users or catalogue), so it can ship with the repository.
"""

import csv
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENRES = {
    "jazz": ["Blue Harbor", "Midnight Brass", "Velvet Quartet"],
    "electronic": ["Neon Drift", "Pulse Theory", "Glass Circuit"],
    "folk": ["Willow Lane", "Old Kettle", "Northern Pines"],
    "rock": ["Iron Meadow", "Static Kings", "Red Canyon"],
}
SONGS = ["Night Swim", "Paper Boats", "Long Road", "Silver Rain"]


def main() -> None:
    rng = random.Random(14)
    tracks = []
    for genre, artists in GENRES.items():
        for a in artists:
            for s in SONGS:
                tracks.append({"track_id": f"t{len(tracks) + 1:03d}", "track_name": s, "artist": a, "genre": genre})
    by_genre = {g: [t for t in tracks if t["genre"] == g] for g in GENRES}
    with open(HERE / "tracks.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["track_id", "track_name", "artist", "genre"])
        w.writeheader()
        w.writerows(tracks)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = []
    for u in range(1, 61):
        fav = rng.choice(list(GENRES))
        n = rng.randint(8, 16)
        t = start + timedelta(hours=rng.randint(0, 500))
        seen = set()
        while len(seen) < n:
            pool = by_genre[fav] if rng.random() < 0.8 else tracks
            tr = rng.choice(pool)
            if tr["track_id"] in seen:
                continue
            seen.add(tr["track_id"])
            t += timedelta(hours=rng.randint(1, 48))
            rows.append({"listener": f"u{u:02d}", "track": tr["track_id"],
                         "played_at": t.strftime("%Y-%m-%d %H:%M:%S"), "stars": rng.randint(3, 5)})
    with open(HERE / "listens.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["listener", "track", "played_at", "stars"])
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
