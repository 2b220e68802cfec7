// message.js — one message's body by kind (protocol §13): text with links,
// image (inline: by http/https URL, or an uploaded attachment of a raster
// type, through the client's attachmentUrl), file, audio/video (as links
// with name and size: the page's CSP allows no foreign media), location,
// app kinds; the body is the fallback whenever the content is missing or
// malformed. Also the one-line preview used in the conversation list.
// Everything is built as text nodes.

import { fileSize, h, safeUrl } from './dom.js';
import { S } from './store.js';

/** Raster types shown inline; the server serves these `inline` too (other images are files to download). */
export const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
/** Thumbnails fit in this box (CSS keeps to it as well). */
const THUMB_PX = 320;

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/** Text with http(s) links made clickable (as nodes, never HTML). */
export function linkify(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    let url = m[0];
    // Trailing punctuation is usually not part of the link.
    const trail = /[.,;:!?)\]]+$/.exec(url);
    if (trail) url = url.slice(0, -trail[0].length);
    const href = safeUrl(url);
    if (!href) continue;
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(h('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' }, url));
    last = m.index + url.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const str = (v) => (typeof v === 'string' && v.trim() ? v : null);
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** A generic fallback such as "[image]" says nothing a card does not. */
const isLabel = (body) => /^\s*\[[^\]]{1,30}\]\s*$/.test(body || '');

function textBody(body) {
  return h('div', { class: 'text' }, linkify(body ?? ''));
}

function caption(m) {
  return m.body && !isLabel(m.body) ? textBody(m.body) : null;
}

/**
 * Where the media of content `c` is: an uploaded attachment's URL on this
 * server (the client's attachmentUrl: the token in the query, so <img> and
 * <a> can fetch it), or an http(s) URL; null for anything else.
 */
function mediaHref(c) {
  if (c.attachment !== undefined) {
    try {
      return S.client?.attachmentUrl(c.attachment) ?? null;
    } catch {
      return null; // not an attachment id, or no token
    }
  }
  return safeUrl(c.url);
}

/** width/height attributes that fit `w`×`h` into the thumbnail box (they reserve the space before the image loads). */
function thumbSize(w, hgt) {
  if (!(w > 0 && w < 100000 && hgt > 0 && hgt < 100000)) return {};
  const scale = Math.min(1, THUMB_PX / w, THUMB_PX / hgt);
  return { width: Math.max(1, Math.round(w * scale)), height: Math.max(1, Math.round(hgt * scale)) };
}

function imageBody(m, c) {
  // An uploaded image is shown inline only when it is of a raster type;
  // an SVG or another image is offered as a file.
  if (c.attachment !== undefined && !INLINE_IMAGES.has(str(c.mime)?.toLowerCase())) return fileBody(m, c, 'image');
  const src = mediaHref(c);
  if (!src) return null;
  const alt = str(c.name) ?? (isLabel(m.body) ? 'image' : m.body || 'image');
  const img = h('img', {
    src,
    alt,
    loading: 'lazy',
    decoding: 'async',
    referrerpolicy: 'no-referrer',
    ...thumbSize(num(c.width), num(c.height)),
  });
  img.addEventListener('error', () => img.closest('.media')?.classList.add('broken'), { once: true });
  return [
    h('a', { class: 'media', href: src, target: '_blank', rel: 'noopener noreferrer', title: str(c.name) }, img, h('span', { class: 'media-fallback' }, `🖼 ${alt}`)),
    caption(m),
  ];
}

const ICONS = { file: '📄', audio: '🎵', video: '🎬', image: '🖼' };

function fileBody(m, c, kind) {
  const href = mediaHref(c);
  if (!href) return null;
  const name = str(c.name) ?? (isLabel(m.body) ? `${kind}` : m.body) ?? kind;
  const meta = [str(c.mime), fileSize(num(c.size) ?? NaN), num(c.duration_ms) != null ? duration(c.duration_ms) : null]
    .filter(Boolean)
    .join(' · ');
  return [
    h(
      'a',
      {
        class: 'card file-card',
        href,
        target: '_blank',
        rel: 'noopener noreferrer',
        // `download` works for this server's files only (browsers ignore it across origins).
        download: kind === 'file' || (c.attachment !== undefined && kind === 'image') ? name : null,
        title: `${c.attachment !== undefined ? 'Download' : 'Open'} ${name}`,
      },
      h('span', { class: 'card-icon', 'aria-hidden': 'true' }, ICONS[kind] ?? '📄'),
      h('span', { class: 'card-text' }, h('span', { class: 'card-title' }, name), meta ? h('span', { class: 'card-meta' }, meta) : null),
    ),
    m.body && m.body !== name ? caption(m) : null,
  ];
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function locationBody(m, c) {
  const lat = num(c.lat);
  const lon = num(c.lon);
  if (lat == null || lon == null || Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
  const href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
  const name = str(c.name) ?? (m.body && !isLabel(m.body) ? m.body : 'Location');
  return [
    h(
      'a',
      { class: 'card location-card', href, target: '_blank', rel: 'noopener noreferrer' },
      h('span', { class: 'card-icon', 'aria-hidden': 'true' }, '📍'),
      h('span', { class: 'card-text' }, h('span', { class: 'card-title' }, name), h('span', { class: 'card-meta' }, `${lat.toFixed(5)}, ${lon.toFixed(5)}`)),
    ),
    m.body && m.body !== name ? caption(m) : null,
  ];
}

/** The body of message `m` as nodes. */
export function renderBody(m) {
  const kind = m.kind && m.kind !== 'text' ? m.kind : null;
  const c = m.content && typeof m.content === 'object' ? m.content : null;
  let nodes = null;
  if (kind && c) {
    if (kind === 'image') nodes = imageBody(m, c);
    else if (kind === 'file' || kind === 'audio' || kind === 'video') nodes = fileBody(m, c, kind);
    else if (kind === 'location') nodes = locationBody(m, c);
  }
  if (nodes) return nodes;
  if (kind && kind.startsWith('x-')) return [textBody(m.body || `[${kind}]`), h('span', { class: 'kind-tag' }, kind.slice(2))];
  return textBody(m.body || (kind ? `[${kind}]` : ''));
}

/** One line for the conversation list. */
export function previewText(m) {
  const c = m.content && typeof m.content === 'object' ? m.content : {};
  const body = (m.body || '').replace(/\s+/g, ' ').trim();
  if (m.recalled != null) return 'This message was recalled';
  const labelled = (icon, fallback) => `${icon} ${body && !isLabel(body) ? body : fallback}`;
  switch (m.kind) {
    case 'image': return labelled('🖼', 'Photo');
    case 'file': return labelled('📄', str(c.name) ?? 'File');
    case 'audio': return labelled('🎵', 'Audio');
    case 'video': return labelled('🎬', 'Video');
    case 'location': return labelled('📍', str(c.name) ?? 'Location');
    // Events are the last message only when there is nothing else (as in the server's inbox).
    case 'reaction': return `${c.remove ? 'took back' : 'reacted'} ${str(c.emoji) ?? ''}`.trim();
    case 'recall': return 'recalled a message';
    case 'edit': return body ? `✎ ${body}` : 'edited a message';
    default: return body || (m.kind ? `[${m.kind}]` : '');
  }
}
