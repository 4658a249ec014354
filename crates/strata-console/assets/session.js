// The signed-in token, kept in sessionStorage: it lives as long as the tab and is never
// written anywhere else (no cookie, so no ambient authority a cross-site request could use).

const KEY = 'strata.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(secret) {
  sessionStorage.setItem(KEY, secret);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}
