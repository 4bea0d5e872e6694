//! `floodwatch top` in a terminal: a frame a second from the running watch, drawn with ratatui
//! on crossterm. Keys: `s` sorts by rate or fill, `v` filters by the next vhost, arrows (or
//! `j`/`k`) select a key, `b` and `u` ban and unban it after a confirmation line (the same
//! requests `floodwatch ban` and `unban` send, checked by watch the same way), `q` quits.
//!
//! The drawing ([`draw`]) and the keys ([`App::on_key`]) are plain functions of the state, so
//! tests drive them on ratatui's `TestBackend` without a terminal.

use std::time::{Duration, Instant, SystemTime};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::top::{KeyState, Top};
use super::top_text::{self as text, SortBy};
use super::Request;

/// The smallest terminal the view fits in.
pub const MIN_WIDTH: u16 = 72;
pub const MIN_HEIGHT: u16 = 16;
/// How often a frame is asked for.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What the admin is asked to confirm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Ban(String),
    Unban(String),
}

/// What a key press asks of the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    /// Send this request to watch (a confirmed ban or unban) and show its answer.
    Send(Request),
}

/// The view's state.
pub struct App {
    pub top: Option<Top>,
    /// Why the last frame could not be had (shown until the next one comes).
    pub trouble: Option<String>,
    pub sort: SortBy,
    pub vhost: Option<String>,
    pub selected: usize,
    pub prompt: Option<Prompt>,
    /// The answer to the last ban or unban, or a hint.
    pub message: Option<String>,
    /// The length of a ban made with `b`, in seconds, and as the admin wrote it.
    pub ban_seconds: u64,
    pub ban_text: String,
}

impl App {
    pub fn new(ban_seconds: u64, ban_text: &str) -> App {
        App {
            top: None,
            trouble: None,
            sort: SortBy::Rate,
            vhost: None,
            selected: 0,
            prompt: None,
            message: None,
            ban_seconds,
            ban_text: ban_text.to_string(),
        }
    }

    /// The key under the cursor, as the rows show it now.
    pub fn selected_key(&self) -> Option<String> {
        let top = self.top.as_ref()?;
        let keys = text::keys(top, self.sort, self.vhost.as_deref());
        keys.get(self.selected).map(|k| k.key.clone())
    }

    fn rows(&self) -> usize {
        (self.top.as_ref()).map_or(0, |t| text::keys(t, self.sort, self.vhost.as_deref()).len())
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if ctrl_c {
            return Action::Quit;
        }
        if let Some(prompt) = self.prompt.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => match prompt {
                    Prompt::Ban(key) => Action::Send(Request::Ban {
                        key,
                        seconds: self.ban_seconds,
                        rule: None,
                        force: false,
                    }),
                    Prompt::Unban(key) => Action::Send(Request::Unban { key }),
                },
                _ => {
                    self.message = Some("cancelled".into());
                    Action::Nothing
                }
            };
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.rows().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.selected = 0;
            }
            KeyCode::Char('v') => {
                self.vhost = self.next_vhost();
                self.selected = 0;
            }
            KeyCode::Char('b') | KeyCode::Char('u') => match self.selected_key() {
                Some(k) if key.code == KeyCode::Char('b') => self.prompt = Some(Prompt::Ban(k)),
                Some(k) => self.prompt = Some(Prompt::Unban(k)),
                None => self.message = Some("no key selected".into()),
            },
            _ => {}
        }
        Action::Nothing
    }

    /// The filter after the current one: each vhost of the frame in turn, then none.
    fn next_vhost(&self) -> Option<String> {
        let names: Vec<&str> = (self.top.iter())
            .flat_map(|t| t.vhosts.iter().map(|v| v.vhost.as_str()))
            .filter(|v| *v != "-")
            .collect();
        match &self.vhost {
            None => names.first().map(|v| v.to_string()),
            Some(cur) => {
                let at = names.iter().position(|v| v == cur);
                at.and_then(|i| names.get(i + 1)).map(|v| v.to_string())
            }
        }
    }
}

/// Draws the whole view into `f`.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "floodwatch top: the terminal is too small ({}x{}); it needs {MIN_WIDTH}x{MIN_HEIGHT} \
             or more. q quits.",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let Some(top) = &app.top else {
        let msg = app
            .trouble
            .as_deref()
            .unwrap_or("waiting for the first frame...");
        f.render_widget(Paragraph::new(text::clean(msg, 400)), area);
        return;
    };
    let vhost_rows = top.vhosts.len().clamp(1, 5) as u16;
    let [head, vhosts, keys, foot] = Layout::vertical([
        Constraint::Length(3),
        // Borders and the heads' line.
        Constraint::Length(vhost_rows + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_head(f, top, app, head);
    draw_vhosts(f, top, vhosts);
    draw_keys(f, top, app, keys);
    f.render_widget(Paragraph::new(footer(app)), foot);
}

fn draw_head(f: &mut Frame, top: &Top, app: &App, area: Rect) {
    let mut title = format!("floodwatch top {}", text::clean(&top.version, 16));
    if let Some(trouble) = &app.trouble {
        title.push_str(" · ");
        title.push_str(&text::clean(trouble, 60));
    }
    let lines = vec![
        Line::styled(title, Style::new().add_modifier(Modifier::BOLD)),
        Line::raw(text::header(top)),
        Line::raw(text::sinks_line(top)),
    ];
    f.render_widget(Paragraph::new(lines), area);
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn draw_vhosts(f: &mut Frame, top: &Top, area: Rect) {
    let rows: Vec<Row> = (top.vhosts.iter())
        .take(area.height.saturating_sub(3) as usize)
        .map(|v| Row::new(text::vhost_row(v, 40)))
        .collect();
    let widths = [
        Constraint::Min(20),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(text::VHOST_HEADS).style(bold()))
        .block(ratatui::widgets::Block::bordered().title("vhosts (lines/s)"));
    f.render_widget(table, area);
}

fn draw_keys(f: &mut Frame, top: &Top, app: &App, area: Rect) {
    let now = humantime::parse_rfc3339(&top.now)
        .ok()
        .or(Some(SystemTime::now()));
    let keys = text::keys(top, app.sort, app.vhost.as_deref());
    let rows: Vec<Row> = (keys.iter())
        .map(|k| {
            let row = Row::new(text::key_row(k, now));
            match k.state {
                KeyState::Banned | KeyState::Over => row.style(bold()),
                _ => row,
            }
        })
        .collect();
    let widths = [
        Constraint::Min(15),
        Constraint::Length(14),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(15),
    ];
    let filter = match &app.vhost {
        Some(v) => format!(", vhost {}", text::clean(v, 30)),
        None => String::new(),
    };
    let title = format!("keys (by {}{filter})", app.sort.name());
    let table = Table::new(rows, widths)
        .header(Row::new(text::KEY_HEADS).style(bold()))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(ratatui::widgets::Block::bordered().title(title));
    let mut state = TableState::default().with_selected((!keys.is_empty()).then_some(app.selected));
    f.render_stateful_widget(table, area, &mut state);
}

/// The last line: the confirmation asked for, the last answer, or the keys.
fn footer(app: &App) -> Line<'static> {
    match (&app.prompt, &app.message) {
        (Some(Prompt::Ban(k)), _) => Line::styled(
            format!(
                "ban {} for {} through every sink? y/n",
                text::clean(k, 40),
                app.ban_text
            ),
            bold(),
        ),
        (Some(Prompt::Unban(k)), _) => Line::styled(
            format!("lift every ban of {}? y/n", text::clean(k, 40)),
            bold(),
        ),
        (None, Some(m)) => Line::raw(text::clean(m, 200)),
        (None, None) => Line::raw("q quit · s sort · v vhost · ↑↓ select · b ban · u unban"),
    }
}

/// Runs the view until `q`: `fetch` asks for a frame, `send` sends a confirmed ban or unban
/// and says what came of it.
pub fn run(
    mut app: App,
    fetch: &mut dyn FnMut() -> Result<Top, String>,
    send: &mut dyn FnMut(Request) -> String,
) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> std::io::Result<()> {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                match fetch() {
                    Ok(top) => {
                        app.top = Some(top);
                        app.trouble = None;
                    }
                    Err(e) => app.trouble = Some(e),
                }
                app.selected = app.selected.min(app.rows().saturating_sub(1));
                next = Instant::now() + REFRESH;
            }
            terminal.draw(|f| draw(f, &app))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(key) = event::read()? {
                    match app.on_key(key) {
                        Action::Quit => return Ok(()),
                        Action::Send(req) => {
                            app.message = Some(send(req));
                            next = Instant::now();
                        }
                        Action::Nothing => {}
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::top_text::tests::sample;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..h {
            for x in 0..w {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn press(app: &mut App, c: char) -> Action {
        app.on_key(KeyEvent::from(KeyCode::Char(c)))
    }

    fn app() -> App {
        let mut a = App::new(3600, "1h");
        a.top = Some(sample());
        a
    }

    #[test]
    fn renders_header_vhosts_and_keys_in_80x24() {
        let s = screen(&app(), 80, 24);
        assert!(s.contains("floodwatch top 0.1.0"), "{s}");
        assert!(s.contains("lines/s 12.3k"), "{s}");
        assert!(s.contains("sinks: deny ok"), "{s}");
        assert!(s.contains("shop.example"), "{s}");
        assert!(s.contains("203.0.113.7"), "{s}");
        assert!(s.contains("banned 10m 0s"), "{s}");
        assert!(s.contains("near"), "{s}");
        assert!(s.contains("q quit"), "{s}");
        assert!(
            !s.contains('\u{1b}'),
            "no escape from the logs reaches the screen"
        );
    }

    #[test]
    fn says_when_the_terminal_is_too_small() {
        let s = screen(&app(), 60, 12);
        assert!(s.contains("too small (60x12)"), "{s}");
    }

    #[test]
    fn b_asks_for_confirmation_then_sends_the_ban_request() {
        let mut a = app();
        assert_eq!(press(&mut a, 'b'), Action::Nothing);
        let s = screen(&a, 80, 24);
        assert!(
            s.contains("ban 203.0.113.7 for 1h through every sink? y/n"),
            "{s}"
        );
        assert_eq!(
            press(&mut a, 'y'),
            Action::Send(Request::Ban {
                key: "203.0.113.7".into(),
                seconds: 3600,
                rule: None,
                force: false
            })
        );
        // Anything but y cancels.
        press(&mut a, 'j');
        assert_eq!(press(&mut a, 'u'), Action::Nothing);
        assert_eq!(
            a.prompt,
            Some(Prompt::Unban("198.51.100.2\u{1b}[2J".into()))
        );
        assert_eq!(press(&mut a, 'n'), Action::Nothing);
        assert_eq!(a.message.as_deref(), Some("cancelled"));
        assert_eq!(press(&mut a, 'q'), Action::Quit);
    }

    #[test]
    fn s_sorts_and_v_filters() {
        let mut a = app();
        press(&mut a, 's');
        assert_eq!(a.sort, SortBy::Fill);
        assert!(screen(&a, 80, 24).contains("keys (by fill)"));
        press(&mut a, 'v');
        assert_eq!(a.vhost.as_deref(), Some("shop.example"));
        let s = screen(&a, 80, 24);
        assert!(s.contains("vhost shop.example"), "{s}");
        assert!(!s.contains("198.51.100.2"), "{s}");
        press(&mut a, 'v');
        assert_eq!(a.vhost, None);
    }
}
